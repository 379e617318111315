"""Everything about users: their histories (profiles), retrieval from a user's own history and
from similar users' histories (collaborative), user embeddings, the user index and the trainable
user encoder. Depends only downward (encoders, FAISS helpers, types); heavy libraries load lazily."""
