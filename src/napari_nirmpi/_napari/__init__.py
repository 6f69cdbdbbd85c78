"""napari glue (reader, writer, sample data, dock widgets). Imports napari/Qt lazily per module."""
