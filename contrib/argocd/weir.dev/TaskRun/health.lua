-- Argo CD health of a weir.dev TaskRun (one task of a run, or one made by hand), from its
-- Succeeded condition: Progressing while it runs or waits for a retry, Healthy once it
-- succeeded, Degraded when it failed, Suspended when cancelled (a person's decision, not a
-- fault). Written for gopher-lua (Lua 5.1), as Argo CD runs it.
local hs = {}

local function condition(status, kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Weir operator to start the task"
  return hs
end

local succeeded = condition(status, "Succeeded")
local progress = ""
if succeeded == nil or succeeded.status == "Unknown" then
  hs.status = "Progressing"
  if succeeded ~= nil and succeeded.message ~= nil and succeeded.message ~= "" then
    hs.message = succeeded.message .. progress
  elseif status.phase ~= nil then
    hs.message = status.phase .. progress
  else
    hs.message = "Waiting for the Weir operator to start the task"
  end
elseif succeeded.status == "True" then
  hs.status = "Healthy"
  hs.message = "Succeeded" .. progress
else
  local reason = succeeded.reason or "Failed"
  if reason == "Cancelled" or status.phase == "Cancelled" then
    hs.status = "Suspended"
  else
    hs.status = "Degraded"
  end
  if succeeded.message ~= nil and succeeded.message ~= "" then
    hs.message = reason .. ": " .. succeeded.message
  else
    hs.message = reason
  end
end
return hs
