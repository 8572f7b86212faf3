"""The VALOR-32K release (and its embedded stand-in) as 'captions' shards: read by retrieval and captioning."""
