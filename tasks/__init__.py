"""Task modules. Each file registers one task with ``@register_task(name)``; the registry imports
every module here on first lookup."""
