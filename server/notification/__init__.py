"""Notices (お知らせ) and the self-information view (自己情報表示)."""
