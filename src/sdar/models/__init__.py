"""Model loading, generation and scoring (log-probs and entropies from logits)."""
