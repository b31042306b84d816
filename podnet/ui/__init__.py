"""`podnet ui`: a live web view of the cluster (topology, service maps with flows, the policy matrix, a
packet's journey). `model` shapes what the page draws (pure); `access` logs users in by asking the API
server; `feeds` follows the API and the node agents; `server` is the aiohttp adapter; `static/` the page."""
