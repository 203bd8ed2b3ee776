// The single-agent server's chat page (/chat/): the agent API lives one
// level above the page, so the page works under any path prefix (a reverse
// proxy, or a multi-tenant session's /v1/sessions/{id}/chat/).
import { createChat } from "./chat.js?v=__V__";

createChat(document.getElementById("chat"), { api: new URL("..", location.href) });
