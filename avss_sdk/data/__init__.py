"""Dataset readers (numpy only): AVSBench-semantic and SynthAVS-OV, through one reader."""
