"""`make demo` (`python -m clients.demo`): the one-stop card's whole story, played and checked.

See `clients.demo.story` for the steps and `clients.demo.platform` for the platform it plays on.
"""
