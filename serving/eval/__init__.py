"""`embedserve eval`: search quality of every output option on the user's own data.

data (DATA in) -> embed (engine or service) -> search (each option as a vector DB would)
-> metrics (trec_eval definitions) -> slices -> report (table, JSON, plot); runner ties them,
command is the CLI.
"""
