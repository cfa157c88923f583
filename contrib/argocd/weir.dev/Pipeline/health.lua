-- Argo CD health of a weir.dev Pipeline: whether the operator accepted its latest spec.
-- (A Pipeline's runs have health of their own; a failed run does not make its Pipeline
-- unhealthy.) Written for gopher-lua (Lua 5.1), as Argo CD runs it.
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

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local status = obj.status
local generation = obj.metadata.generation
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Weir operator to validate the pipeline"
  return hs
end
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Weir operator to validate the latest change"
  return hs
end

local ready = condition(status, "Ready")
if ready == nil or ready.status == "Unknown" then
  hs.status = "Progressing"
  hs.message = text(ready, "Waiting for the Weir operator to validate the pipeline")
elseif ready.status == "False" then
  hs.status = "Degraded"
  hs.message = text(ready, "The pipeline is invalid")
elseif obj.spec ~= nil and obj.spec.schedule ~= nil and obj.spec.schedule.suspend == true then
  hs.status = "Suspended"
  hs.message = "The schedule is suspended"
else
  hs.status = "Healthy"
  hs.message = text(ready, "Valid")
end
return hs
