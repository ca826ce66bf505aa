"""Files in and out: reading CTs (NIfTI, NRRD, MHA, DICOM) into the canonical layout and back, model packages
(safetensors + model.json, sha256-verified) and the user's models folder, and writing outputs atomically
(round files included)."""
