"""Dataset tools: TFRecord converters (COCO, PASCAL VOC), validation, label maps, sample data."""
