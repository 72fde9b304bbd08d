"""P-KDGAN: progressive knowledge distillation between two EDE-GANs."""
