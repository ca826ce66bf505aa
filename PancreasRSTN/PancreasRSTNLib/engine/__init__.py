"""Inference: Algorithm 1 of the RSTN paper on a canonical volume (coarse round, fine rounds until the inter-
round DSC converges), and the reference-style loop and C2F baseline it is checked against.

Reading order: ``config`` (what a run is asked) and ``results`` (what it yields), ``inference`` (the rounds),
then its parts: ``triplets`` (slice triplets and their averaging), ``boxes`` (crop boxes), ``fine_crops`` (the
fine stage's windows and batches), ``batching`` (batch sizes, out-of-memory fallback),
``postprocess``. ``segmentation`` maps an image onto the engine and every round back (``resampling``)."""
