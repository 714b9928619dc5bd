-- The smallest lunio program: one task that waits without blocking, then
-- greets. asyncio's `asyncio.run(main())` is `lunio.run(main)`.
--
--   lua5.4 examples/hello.lua
local lunio = require "lunio"

lunio.run(function()
  lunio.sleep(0.1)
  print("Hello, world!")
end)
