"""Separate knowledge from perception: procedural DINO perception, knowledge in a visual memory."""
