"""The window: main window, the bridge from the recorder into Qt, dialogs, settings, theme."""
