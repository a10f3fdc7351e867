"""The corpus stage: PMC Open Access articles to a clean, deduplicated, article-split figure-caption dataset."""
