"""The model and data zoo (pure torch and scikit-learn data): data sets, anchor networks, training problems."""
