-- Argo CD health check for replytracker.dev/MessageTracker.
--
-- Argo CD runs this with the tracker as the global `obj` and reads the
-- returned table's `status` and `message`. Scripts from argocd-cm run
-- without Lua's string and math libraries unless useOpenLibs is set, so this
-- one uses only the base library and `..`.
--
--   no status yet, or observedGeneration not metadata.generation    -> Progressing
--   phase Failed, or the Ready condition False                       -> Degraded
--   phase Suspended                                                  -> Suspended
--   phase Tracking with Ready True                                   -> Healthy
--   phase Replied or Expired                                         -> Healthy,
--     but Degraded once the webhook delivery was given up (WebhookDelivered False DeliveryFailed)
--   any other phase                                                  -> Unknown
--
-- Expired is Healthy: the timeout the spec asked for has passed and the
-- operator did what it should, so there is nothing to repair.

local function find_condition(status, condition_type)
  if status.conditions == nil then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == condition_type then
      return condition
    end
  end
  return nil
end

local function describe(condition)
  if condition == nil then
    return ""
  end
  local message = condition.message or ""
  if message == "" then
    return condition.reason or ""
  end
  return (condition.reason or "") .. ": " .. message
end

local health = {}
local status = obj.status

if status == nil or status.phase == nil then
  health.status = "Progressing"
  health.message = "Waiting for the operator's first check."
  return health
end

local phase = status.phase
local finished = phase == "Replied" or phase == "Expired"
local generation = obj.metadata and obj.metadata.generation
local observed = status.observedGeneration

if generation ~= nil and observed ~= generation then
  health.status = "Progressing"
  health.message = "Waiting for the operator to act on generation " .. tostring(generation)
    .. " (observed: " .. tostring(observed or "none") .. ")."
  return health
end

local ready = find_condition(status, "Ready")

if phase == "Failed" or (ready ~= nil and ready.status == "False") then
  health.status = "Degraded"
  health.message = describe(ready)
  return health
end

if phase == "Suspended" then
  health.status = "Suspended"
  health.message = describe(ready)
  return health
end

if finished then
  local delivered = find_condition(status, "WebhookDelivered")
  if delivered ~= nil and delivered.status == "False" and delivered.reason == "DeliveryFailed" then
    health.status = "Degraded"
    health.message = phase .. "; webhook delivery failed. " .. (delivered.message or "")
    return health
  end
  health.status = "Healthy"
  if phase == "Replied" then
    health.message = describe(find_condition(status, "Replied"))
  else
    health.message = describe(ready)
  end
  if delivered ~= nil and delivered.status == "False" and delivered.reason ~= "NotConfigured" then
    health.message = health.message .. " Webhook delivery " .. describe(delivered)
  end
  return health
end

if phase == "Tracking" then
  if ready ~= nil and ready.status == "True" then
    health.status = "Healthy"
  else
    health.status = "Progressing"
  end
  health.message = describe(ready)
  return health
end

health.status = "Unknown"
health.message = "Unrecognized status.phase " .. tostring(phase) .. "."
return health
