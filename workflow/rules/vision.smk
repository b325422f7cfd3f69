# Visual classification: images through a vision-language model's language-model residual stream.
