"""Online applications (マイナポータル 子育てワンストップ 電子申請): catalogue, drafts, signed submission, processing."""
