"""Front-ends: the decorator and the openai client wrapper, on the engine's adapter API."""
