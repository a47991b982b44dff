-- busted helper: uploader warnings (first failures, drops) are expected in specs;
-- keep the run's output to what matters. Specs about logging set their own level.
require("wsup").log_level("error")
