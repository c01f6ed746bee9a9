-- Argo CD health of a CmsConnection or ClusterCmsConnection
-- (resource.customizations.health.keyward.dev_CmsConnection and ..._ClusterCmsConnection).
-- It reads the Ready condition the operator writes after each check of the connection:
--   Progressing  not checked yet at this generation
--   Degraded     Ready=False: the CMS does not answer through it (the reason says why)
--   Healthy      Ready=True: the CMS answered with the connection's credential
local hs = { status = "Progressing", message = "Waiting for the keyward operator to check it" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata and obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to check generation " .. generation
  return hs
end
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    if c.status == "True" then
      hs.status = "Healthy"
      hs.message = c.message or ""
    else
      hs.status = "Degraded"
      hs.message = (c.reason or "") .. ": " .. (c.message or "")
    end
  end
end
return hs
