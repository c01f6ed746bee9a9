-- Argo CD health of an ApiKeyPolicy (resource.customizations.health.keyward.dev_ApiKeyPolicy).
-- It reads the conditions keyward writes, as kstatus does:
--   Progressing  the operator has not seen this generation yet, or it is working on it
--                (Ready=False and not Stalled: retried, or waiting for what it names)
--   Degraded     Stalled=True: only a change of the spec (or of what it names) helps
--   Suspended    ObserveOnly changes wait for a person (ChangesPending=True)
--   Healthy      Ready=True and nothing waits
local hs = { status = "Progressing", message = "Waiting for the keyward operator" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata and obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to see generation " .. generation
  return hs
end
local by_type = {}
for _, c in ipairs(obj.status.conditions) do
  by_type[c.type] = c
end
local function said(c)
  return (c.reason or "") .. ": " .. (c.message or "")
end
local stalled, ready, pending = by_type["Stalled"], by_type["Ready"], by_type["ChangesPending"]
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = said(stalled)
elseif ready ~= nil and ready.status == "True" then
  if pending ~= nil and pending.status == "True" then
    hs.status = "Suspended"
    hs.message = said(pending)
  else
    hs.status = "Healthy"
    hs.message = ready.message or ""
  end
elseif ready ~= nil then
  hs.message = said(ready)
end
return hs
