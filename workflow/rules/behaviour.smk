# Cross-model behaviour probing: score a causal LM on multiple-choice data (score_behaviour).
