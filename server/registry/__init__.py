"""The municipal registry: municipalities, residents, households, card links, seals, tax, family registers."""
