"""Request and response bodies of the HTTP API (pydantic): the field names are the API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=512)
    text: str = Field(min_length=1)
    title: str | None = None
    date: str | None = Field(default=None, description="e.g. 2019-03-05 or 2019-03-05T14:30Z")
    shared: bool = Field(default=True, description="False: the item never reaches another user's results")
    meta: dict[str, Any] = Field(default_factory=dict)


class AddItems(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[Item] = Field(min_length=1)


class Version(BaseModel):
    user_id: str
    history_version: int


class UserInfo(BaseModel):
    user_id: str
    history_size: int
    history_version: int
    shared: bool


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(default=None, min_length=1)
    query: str = Field(min_length=1)
    k: int = Field(default=10, description="results to return; 1..max_k")
    similar_users: bool = Field(default=False, description="list the similar users the collaborative retriever used")
    rerank: bool = Field(default=True, description="run the pipeline's rerankers")
    generate: bool = Field(default=True, description="run the pipeline's generator when it has one")
    return_trace: bool = Field(default=False, description="each stage's trace and each document's reasoning")
    id: str | None = Field(default=None, min_length=1, description="a query id to echo (default q0, or the batch position)")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queries: list[QueryRequest] = Field(min_length=1)


class Ranked(BaseModel):
    id: str
    score: float
    rank: int
    owner: str | None
    text: str
    title: str | None = None
    reasoning: str | None = None


class QueryResponse(BaseModel):
    query_id: str
    user_id: str | None
    ranking: list[Ranked]
    answer: dict[str, Any] | None = Field(default=None, description="TREC RAG 2024 shape: references, answer [{text, citations}], response_length")
    similar_users: list[tuple[str, float]] | None = None
    trace: list[dict[str, Any]] | None = None


class BatchResponse(BaseModel):
    results: list[QueryResponse]
