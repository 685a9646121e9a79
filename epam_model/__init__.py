"""epam_model: EPAM-Net (two X-ShiftNet streams, pose-guided attention, late fusion) and its training."""
