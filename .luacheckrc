-- luacheck configuration for wsup: `make lint` runs `luacheck lua spec examples bench`.
std = "lua54"
max_line_length = 120
files["spec/"] = { std = "+busted" }
files["examples/spec/"] = { std = "+busted" } -- the examples' own specs (build/wsup test examples/spec)
