import { render } from "preact";
import { App } from "./App";
import { initAuth } from "./lib/auth";
import { interceptLinks } from "./lib/router";
import "./styles.css";

const root = document.getElementById("app");
if (root) {
  interceptLinks(root);
  void initAuth().finally(() => render(<App />, root));
}
