"""Text-side support: offline nltk / TextAttack resources and seeded text perturbations."""
