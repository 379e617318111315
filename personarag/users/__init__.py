"""User representations for collaborative retrieval: profile embeddings (mean, recency-weighted),
a trainable contrastive user encoder, and FAISS search over users. Heavy libraries load lazily."""
