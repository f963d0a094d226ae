"""Engine: one LightningModule that trains any objective, plus the data stream and the run folder."""
