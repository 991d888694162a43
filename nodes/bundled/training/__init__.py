"""Training and judging the bundled shapes model: data set, architectures, tokenizer,
the judge classifier, metrics, and the step-budgeted trainer behind ``nodeflow train-demo``."""
