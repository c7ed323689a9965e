"""DICOMweb (PS3.18) over the archive: QIDO-RS, WADO-RS, STOW-RS, tokens and a viewer page."""
