"""Studies out of the archive: folders named by a template, DICOM media (DICOMDIR), zip files,
rendered images; every export with a manifest, read back before it is declared done, and moved
into place only when complete (`run.export`)."""
