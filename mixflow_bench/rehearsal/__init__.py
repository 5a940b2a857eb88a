"""Dress rehearsal of the paper recipes: real formats, real downloader, real CLI, reduced scale."""
