-- Runs Weir's Argo CD health scripts against sample objects, the way Argo CD does: the
-- script is a chunk with the object in the global `obj`, returning {status, message}.
-- Usage: lua5.4 (or lua5.1) harness.lua <cases.lua>   (cases.lua is written by to_lua.py)
local cases = dofile(arg[1])
local failed, passed = 0, 0
for _, case in ipairs(cases) do
  -- Each script gets a fresh environment with only what gopher-lua's base library offers,
  -- so a script cannot lean on state left by another one.
  local env = {
    obj = case.obj, ipairs = ipairs, pairs = pairs, type = type, tostring = tostring,
    tonumber = tonumber, string = string, table = table, math = math, next = next,
  }
  local chunk, err
  if setfenv ~= nil then -- Lua 5.1, as gopher-lua in Argo CD
    chunk, err = loadfile(case.script)
    if chunk ~= nil then
      setfenv(chunk, env)
    end
  else
    chunk, err = loadfile(case.script, "t", env)
  end
  local ok, hs
  if chunk == nil then
    ok, hs = false, err
  else
    ok, hs = pcall(chunk)
  end
  if not ok then
    failed = failed + 1
    print(string.format("FAIL %s on %s: %s", case.script, case.input, tostring(hs)))
  elseif hs == nil or hs.status ~= case.want.status or hs.message ~= case.want.message then
    failed = failed + 1
    print(string.format(
      "FAIL %s on %s:\n  got  %s: %s\n  want %s: %s",
      case.script, case.input,
      tostring(hs and hs.status), tostring(hs and hs.message),
      case.want.status, case.want.message))
  else
    passed = passed + 1
  end
end
print(string.format("argocd health (%s): %d passed, %d failed", _VERSION, passed, failed))
os.exit(failed == 0 and 0 or 1)
