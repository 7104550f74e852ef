// The first module of every component build.mjs makes: it hands the gateway's import to the SDK
// before the policy's module runs.

import * as gateway from "writ:policy/host@0.1.0";
import { installHost } from "./host.js";

installHost(gateway);
