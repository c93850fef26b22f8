"""mechrec_recsys: the sequential-recommendation adapter of mechrec.

It supplies MovieLens-style data loading and splits, GPTRec (a GPT-style next-item model
built as a TransformerLens ``HookedTransformer``), ranking metrics, and the pipeline of the
paper "Sparse Autoencoders for Sequential Recommendation Models".
"""

__version__ = "0.1.0"
