"""Generation for online RL: sampling completions with the current policy."""
