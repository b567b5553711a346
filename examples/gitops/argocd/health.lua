-- Argo CD health check for kappa.dev EventLog and MaterializedView (kstatus conditions).
-- Healthy: Ready=True for the current generation. Degraded: Stalled=True or phase Failed (the
-- message says what to change). Progressing: anything else, with the phase and backfill progress.
local hs = {}
local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for kappa-operator to report status"
  return hs
end
if obj.metadata ~= nil and obj.metadata.generation ~= nil and
   (status.observedGeneration == nil or status.observedGeneration < obj.metadata.generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for kappa-operator to observe generation " .. tostring(obj.metadata.generation)
  return hs
end
local ready, stalled = nil, nil
for _, c in ipairs(status.conditions) do
  if c.type == "Ready" then ready = c end
  if c.type == "Stalled" then stalled = c end
end
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message
  return hs
end
if status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = (ready ~= nil and ready.message) or "phase Failed"
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end
hs.status = "Progressing"
local message = "phase " .. tostring(status.phase)
if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  message = message .. ": " .. ready.message
end
if status.backfill ~= nil and status.backfill.progress ~= nil then
  message = message .. " (backfill " .. status.backfill.progress .. ")"
end
hs.message = message
return hs
