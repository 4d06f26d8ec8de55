"""Every PNG of a report. ``registry.FIGURES`` lists them (file name, document section, drawer);
``curves``, ``layerwise`` and ``matrices`` draw them; ``style`` holds what they share.
"""
