"""Fine-tuning after pruning: classification (SGD + cosine, distillation, BN-γ sparsity)."""
