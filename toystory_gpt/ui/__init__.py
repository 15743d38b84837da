"""The web app, in parts: ``page`` lays out the header and the tabs; each tab is a module of its own with a
``TITLE`` and a ``build(context)``, listed in ``page.TABS``."""
