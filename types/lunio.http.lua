---@meta lunio.http
-- LuaLS definitions of lunio's HTTP client (`require "lunio.http"`, also
-- `require("lunio").http`). See docs/http.md.

---Request options (docs/http.md "Request options").
---@class lunio.http.RequestOptions
---@field method? string
---@field headers? table<string, string|string[]|false>
---@field query? table|string
---@field body? string
---@field form? table
---@field json? any needs lua-cjson
---@field timeout? number total seconds
---@field connect_timeout? number
---@field idle_timeout? number|false
---@field redirects? integer
---@field verify? boolean
---@field cainfo? string
---@field proxy? string|false
---@field http_version? "1.0"|"1.1"|"2"|"2-prior-knowledge"
---@field decompress? boolean
---@field stream? boolean read the body with resp:chunks() / resp:read()
---@field output? string stream the body to this file
---@field on_progress? fun(received: integer, total: integer?)
---@field max_body_size? integer
---@field auth? {user: string, password?: string}|string[]

---Session options: request defaults plus the pool's limits.
---@class lunio.http.SessionOptions: lunio.http.RequestOptions
---@field base_url? string
---@field max_connections? integer default 100, 0 = unlimited
---@field max_per_host? integer default 0 = unlimited

---@class lunio.http
---@field version string lunio's version
---@field curl_version string libcurl's version
---@field Headers lunio.http.Headers the Headers methods
---@field Response lunio.http.Response the Response methods
---@field SessionMethods lunio.http.Session the Session methods
local http = {}

---Performs a request (GET, or POST with a body) on the loop's shared session.
---@async
---@param url string
---@param opts? lunio.http.RequestOptions
---@return lunio.http.Response
function http.fetch(url, opts) end

---@async
---@param method string
---@param url string
---@param opts? lunio.http.RequestOptions
---@return lunio.http.Response
function http.request(method, url, opts) end

---@async
---@param url string
---@param opts? lunio.http.RequestOptions
---@return lunio.http.Response
function http.get(url, opts) end

---@async
---@param url string
---@param opts? lunio.http.RequestOptions
---@return lunio.http.Response
function http.head(url, opts) end

---@async
---@param url string
---@param opts? lunio.http.RequestOptions
---@return lunio.http.Response
function http.post(url, opts) end

---@async
---@param url string
---@param opts? lunio.http.RequestOptions
---@return lunio.http.Response
function http.put(url, opts) end

---@async
---@param url string
---@param opts? lunio.http.RequestOptions
---@return lunio.http.Response
function http.patch(url, opts) end

---@async
---@param url string
---@param opts? lunio.http.RequestOptions
---@return lunio.http.Response
function http.delete(url, opts) end

---A client with its own connection pool, cookie jar and defaults.
---@param opts? lunio.http.SessionOptions
---@return lunio.http.Session
function http.Session(opts) end

---The running loop's shared session (used by the module-level functions).
---@return lunio.http.Session
function http.default_session() end

---@class lunio.http.Session
local Session = {}
---@async
---@param url string
---@param opts? lunio.http.RequestOptions
---@return lunio.http.Response
function Session:fetch(url, opts) end
---@async
---@param method string
---@param url string
---@param opts? lunio.http.RequestOptions
---@return lunio.http.Response
function Session:request(method, url, opts) end
---@async
---@param url string
---@param opts? lunio.http.RequestOptions
---@return lunio.http.Response
function Session:get(url, opts) end
---@async
---@param url string
---@param opts? lunio.http.RequestOptions
---@return lunio.http.Response
function Session:head(url, opts) end
---@async
---@param url string
---@param opts? lunio.http.RequestOptions
---@return lunio.http.Response
function Session:post(url, opts) end
---@async
---@param url string
---@param opts? lunio.http.RequestOptions
---@return lunio.http.Response
function Session:put(url, opts) end
---@async
---@param url string
---@param opts? lunio.http.RequestOptions
---@return lunio.http.Response
function Session:patch(url, opts) end
---@async
---@param url string
---@param opts? lunio.http.RequestOptions
---@return lunio.http.Response
function Session:delete(url, opts) end
---Aborts its transfers and closes its connections (also `<close>`).
function Session:close() end
---@return boolean
function Session:closed() end
---@return {active: integer, sockets: integer, idle_handles: integer, bound: boolean}
function Session:stats() end

---@class lunio.http.Response
---@field status integer
---@field ok boolean true for 2xx
---@field reason string
---@field http_version string "1.0", "1.1" or "2"
---@field url string final URL, after redirects
---@field method string
---@field headers lunio.http.Headers
---@field body string|nil nil when streamed or written to `output`
---@field output string|nil
---@field timings {dns: number, connect: number, tls: number, ttfb: number, total: number}
local Response = {}
---The next piece of the body (at most `n` bytes), nil at the end.
---@async
---@param n? integer
---@return string?
function Response:read(n) end
---`for chunk in resp:chunks() do`.
---@async
---@param n? integer
---@return fun(): string?
function Response:chunks(n) end
---The whole body (reads the rest of a streamed one).
---@async
---@return string
function Response:text() end
---The body decoded as JSON (needs lua-cjson).
---@async
---@return any
function Response:json() end
---Raises kind "http_status" unless 2xx; returns the response.
---@return lunio.http.Response
function Response:raise_for_status() end
---Aborts a streamed transfer still running (also `<close>`).
function Response:close() end

---Case-insensitive response headers; `headers["Content-Type"]` is
---`headers:get("Content-Type")` (methods win over header names).
---@class lunio.http.Headers
---@field [string] string|nil
local Headers = {}
---The value, repeated values joined with ", "; nil if absent.
---@param name string
---@return string?
function Headers:get(name) end
---Every value, in order.
---@param name string
---@return string[]
function Headers:get_all(name) end
---@param name string
---@return boolean
function Headers:has(name) end
---`{{name, value}, ...}` in arrival order.
---@return string[][]
function Headers:list() end

return http
