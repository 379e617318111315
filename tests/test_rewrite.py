"""LLM query rewriting before retrieval, driven by a scripted LLM."""

from __future__ import annotations

import pytest

from personarag import Document, InputError, Query, Ranking, ScoredDoc
from personarag.testing import ScriptedLLM
from personarag.retrievers.base import Retriever
from personarag.retrievers.rewrite import QueryRewriteRetriever
from personarag.types import StageTrace


class SharedWords(Retriever):
    spec_name = "test-shared-words"

    def _index(self, corpus):
        self.corpus = corpus

    def _retrieve(self, queries, k):
        out = []
        for q in queries:
            words = set(q.text.lower().split())
            scored = sorted(
                (ScoredDoc(d, float(len(words & set(d.text.lower().split())))) for d in self.corpus.values()),
                key=lambda s: (-s.score, s.doc.id),
            )
            out.append(Ranking(q, scored[:k], (StageTrace("shared-words", info={"text": q.text}),)))
        return out


DOCS = [Document("phototaxis", "phototaxis is movement toward light"), Document("heat", "insects sense heat")]


def test_rewritten_query_finds_what_the_original_misses():
    llm = ScriptedLLM({"moths": "<think>This is about phototaxis and movement toward light.</think>"})
    retriever = QueryRewriteRetriever(SharedWords(), llm, mode="replace")
    retriever.index(DOCS)
    query = Query("q1", "why do moths circle lamps")
    plain = SharedWords()
    plain.index(DOCS)
    assert plain.retrieve(query, k=2)[0].docs[0].score == 0  # no shared word at all
    ranking = retriever.retrieve(query, k=2)[0]
    assert ranking.query == query  # the original query stays on the ranking
    assert ranking.ids[0] == "phototaxis"
    rewrite_trace = ranking.trace[0]
    assert rewrite_trace.stage == "rewrite" and "phototaxis" in rewrite_trace.reasoning
    assert "<think>" not in rewrite_trace.reasoning
    assert rewrite_trace.usage.calls == 1


def test_expand_mode_keeps_the_original_words():
    llm = ScriptedLLM(default="heat")
    retriever = QueryRewriteRetriever(SharedWords(), llm)  # expand is the default
    retriever.index(DOCS)
    ranking = retriever.retrieve(Query("q", "movement toward light"), k=2)[0]
    assert ranking.trace[1].info["text"] == "movement toward light\nheat"


def test_empty_rewrite_falls_back_to_the_query_and_says_so():
    retriever = QueryRewriteRetriever(SharedWords(), ScriptedLLM(default="  "), mode="replace")
    retriever.index(DOCS)
    ranking = retriever.retrieve(Query("q", "insects heat"), k=1)[0]
    assert ranking.ids == ["heat"]
    assert ranking.trace[0].problems


def test_bad_options():
    with pytest.raises(InputError, match="needs an llm"):
        QueryRewriteRetriever(SharedWords())
    with pytest.raises(InputError, match="mode must be one of expand, replace"):
        QueryRewriteRetriever(SharedWords(), ScriptedLLM(default="x"), mode="swap")
    with pytest.raises(InputError, match="placeholder"):
        QueryRewriteRetriever(SharedWords(), ScriptedLLM(default="x"), template="no slot")
