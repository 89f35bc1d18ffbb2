"""What every stage shares: the error type, canonical JSON and run ids, the OpenAI-compatible client
and its wire types, rate limits, pricing, and the curated-dataset format that curate writes and train reads."""
