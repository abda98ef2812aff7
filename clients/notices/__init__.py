"""`python -m clients.notices`: a municipal officer sends notices (お知らせ) and reads their outcome."""
