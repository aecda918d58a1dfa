"""Reading and writing images, masks, label maps and COCO annotations."""
