// The JSON values and structured-output requests are part of RouterCore's API (requests,
// responses, endpoints), so its users see them without importing the modules below it.
@_exported import Grammar
@_exported import JSON
