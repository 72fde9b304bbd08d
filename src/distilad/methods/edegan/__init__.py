"""EDE-GAN: encoder-decoder-encoder GAN for one-class novelty detection (P-KDGAN's teacher)."""
