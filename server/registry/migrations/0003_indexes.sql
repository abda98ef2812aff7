-- Lookups the registry makes on every resident write: which household a resident heads.
CREATE INDEX households_head ON households(head_resident_id);
CREATE INDEX households_municipality ON households(municipality_code);
